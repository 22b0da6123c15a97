//! Sample content for the demo: a few Flatpak runtimes and apps and one plain
//! container image, with real manifests and blobs addressed by their sha256.

use std::collections::HashMap;

use serde_json::json;
use sha2::{Digest, Sha256};

pub struct Image {
    pub repository: &'static str,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    pub labels: serde_json::Value,
}

pub struct Sample {
    pub images: Vec<Image>,
    pub blobs: HashMap<String, Vec<u8>>,
}

pub const PLATFORM: &str = "demo/flatpak/platform";
pub const EDITOR: &str = "demo/flatpak/editor";
pub const CHAT: &str = "demo/flatpak/chat";
pub const TOOLS: &str = "demo/containers/tools";

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn flatpak_labels(kind: &str, id: &str, branch: &str, runtime: &str) -> serde_json::Value {
    let section = if kind == "app" {
        "Application"
    } else {
        "Runtime"
    };
    json!({
        "org.flatpak.ref": format!("{kind}/{id}/x86_64/{branch}"),
        "org.flatpak.metadata": format!("[{section}]\nname={id}\nruntime={runtime}\nsdk={runtime}\n"),
        "org.flatpak.download-size": "4096",
        "org.flatpak.installed-size": "8192",
        "org.flatpak.subject": format!("{id} – démo ✓"),
    })
}

impl Sample {
    pub fn new() -> Self {
        let runtime = "org.example.Platform/x86_64/1";
        let specs = [
            (
                PLATFORM,
                Some(flatpak_labels(
                    "runtime",
                    "org.example.Platform",
                    "1",
                    runtime,
                )),
            ),
            (
                EDITOR,
                Some(flatpak_labels(
                    "app",
                    "org.example.Editor",
                    "stable",
                    runtime,
                )),
            ),
            (
                CHAT,
                Some(flatpak_labels("app", "org.example.Chat", "stable", runtime)),
            ),
            (TOOLS, None),
        ];
        let mut blobs = HashMap::new();
        let mut images = Vec::new();
        for (repository, labels) in specs {
            let layer = format!("layer of {repository}\n").into_bytes();
            let labels = labels.unwrap_or_else(|| json!({"org.example.kind": "plain"}));
            let config = serde_json::to_vec(&json!({
                "architecture": "amd64", "os": "linux",
                "config": {"Labels": labels},
                "rootfs": {"type": "layers", "diff_ids": [digest(&layer)]},
            }))
            .unwrap_or_default();
            let manifest = serde_json::to_vec_pretty(&json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest(&layer), "size": layer.len()}],
            }))
            .unwrap_or_default();
            blobs.insert(digest(&config), config);
            blobs.insert(digest(&layer), layer);
            images.push(Image {
                repository,
                manifest_digest: digest(&manifest),
                manifest,
                labels,
            });
        }
        Sample { images, blobs }
    }

    /// Pulp's index for the Flatpak images (compact JSON, raw UTF-8, as Pulp writes it).
    pub fn index(&self, registry: &str) -> Vec<u8> {
        let results: Vec<serde_json::Value> = self
            .images
            .iter()
            .filter(|i| i.labels.get("org.flatpak.ref").is_some())
            .map(|i| {
                json!({"Name": i.repository, "Images": [{
                    "Tags": ["latest"], "Digest": i.manifest_digest,
                    "MediaType": "application/vnd.oci.image.manifest.v1+json",
                    "OS": "linux", "Architecture": "amd64", "Labels": i.labels,
                }]})
            })
            .collect();
        serde_json::to_vec(&json!({"Registry": registry, "Results": results})).unwrap_or_default()
    }

    pub fn manifest(&self, repository: &str, reference: &str) -> Option<&Image> {
        self.images.iter().find(|i| {
            i.repository == repository && (reference == "latest" || reference == i.manifest_digest)
        })
    }
}
