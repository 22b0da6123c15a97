//! `container-gateway demo`: the gateway's main job on built-in sample upstreams.

mod pki;
mod sample;
mod upstreams;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use crate::config;
use crate::run::{EXIT_CONFIG, EXIT_RUNTIME, init_logging};
use crate::server::{self, StartOptions};
use crate::state::{Mapping, RepoSet};
use sample::{CHAT, EDITOR, PLATFORM, Sample, TOOLS};

const HOST_A: &str = "8a9c2f4e-1b6d-4c3a-9e7f-0d5b6a7c8e91";
const HOST_B: &str = "3f1e0d2c-7a8b-4e5f-9c6d-1a2b3c4d5e6f";
const INDEX_QUERY: &str = "label:org.flatpak.ref:exists=1&architecture=amd64&os=linux&tag=latest";

fn default_plugins_dir() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()?
        .parent()
        .map(Path::to_path_buf)
}

pub fn run(port: u16, plugins_dir: Option<PathBuf>) -> i32 {
    init_logging("warn,access=info");
    let Some(plugins_dir) = plugins_dir.or_else(default_plugins_dir) else {
        eprintln!("cannot tell where the plugins are; pass --plugins-dir");
        return EXIT_CONFIG;
    };
    let system = actix_web::rt::System::new();
    system.block_on(async move {
        match demo(port, &plugins_dir).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("demo failed: {e}");
                EXIT_RUNTIME
            }
        }
    })
}

async fn demo(port: u16, plugins_dir: &Path) -> Result<i32, Box<dyn std::error::Error>> {
    let dir = tempfile::Builder::new()
        .prefix("container-gateway-demo-")
        .tempdir()?;
    let base = dir.path();
    let state_dir = base.join("state");
    std::fs::create_dir_all(&state_dir)?;
    let pki = pki::DemoPki::new()?;
    let files = pki.write_server(base)?;
    let host_a = pki.write_host(base, "host-a", HOST_A)?;
    let host_b = pki.write_host(base, "host-b", HOST_B)?;

    let sample = Arc::new(Sample::new());
    let (pulp_addr, pulp) = upstreams::pulp(sample.clone())?;
    actix_web::rt::spawn(pulp);
    let hosts = HashMap::from([
        (HOST_A.to_owned(), vec![EDITOR, TOOLS]),
        (HOST_B.to_owned(), vec![CHAT, TOOLS]),
    ]);
    let (central_addr, central) = upstreams::central(hosts, vec![PLATFORM])?;
    actix_web::rt::spawn(central);

    let toml = format!(
        r#"[server]
listen = ["127.0.0.1:{port}"]
tls_cert = "{cert}"
tls_key = "{key}"
client_ca = "{ca}"
public_url = "https://localhost:PORT"

[pulp]
endpoint = "http://{pulp_addr}"

[central]
url = "http://{central_addr}"

[state]
dir = "{state}"

[plugins]
dir = "{plugins}"
chain = ["rhsm-cert"]
require_root_owner = false

[admin]
listen = ""
"#,
        cert = files.server_cert.display(),
        key = files.server_key.display(),
        ca = files.ca.display(),
        state = state_dir.display(),
        plugins = plugins_dir.display(),
    );
    // The public URL needs the bound port; bind first when a free one is asked for.
    let port = if port == 0 {
        std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port()
    } else {
        port
    };
    let toml = toml
        .replace("127.0.0.1:0\"]", &format!("127.0.0.1:{port}\"]"))
        .replace("PORT", &port.to_string());
    let config_path = base.join("gateway.toml");
    std::fs::write(&config_path, &toml)?;
    let cfg = match config::load(&config_path) {
        Ok(c) => c,
        Err(problems) => {
            eprintln!("demo configuration rejected:\n{problems}");
            return Ok(EXIT_CONFIG);
        }
    };
    let running = match server::start(cfg, StartOptions::default()).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the gateway: {e}");
            if matches!(e, server::StartError::Config(_)) {
                eprintln!(
                    "(the plugins are looked up in {}; build them with `cargo build --workspace`)",
                    plugins_dir.display()
                );
            }
            return Ok(EXIT_CONFIG);
        }
    };
    // What Katello would push during a smart proxy sync: the repository list.
    let pushed = running.shared.state.replace(|old| {
        let mut next = old.clone();
        next.repositories = [
            (PLATFORM, false),
            (EDITOR, true),
            (CHAT, true),
            (TOOLS, true),
        ]
        .into_iter()
        .map(|(n, auth)| (Arc::from(n), auth))
        .collect();
        next.hosts = [Arc::from(HOST_A), Arc::from(HOST_B)].into_iter().collect();
        next.host_mappings = HashMap::from([
            (
                Arc::from(HOST_A),
                Mapping {
                    repositories: RepoSet::new([EDITOR, TOOLS]),
                    updated_at: SystemTime::now(),
                },
            ),
            (
                Arc::from(HOST_B),
                Mapping {
                    repositories: RepoSet::new([CHAT, TOOLS]),
                    updated_at: SystemTime::now(),
                },
            ),
        ]);
        Ok::<_, std::convert::Infallible>(next)
    });
    if let Err(e) = pushed {
        eprintln!("cannot store the sample state: {e}");
        return Ok(EXIT_RUNTIME);
    }

    let url = format!("https://localhost:{port}");
    let ca = files.ca.display();
    let cert =
        |h: &pki::HostFiles| format!("--cert {} --key {}", h.cert.display(), h.key.display());
    println!(
        "container-gateway demo is running (files in {}). Ctrl-C stops it.\n",
        base.display()
    );
    println!(
        "Sample Pulp: http://{pulp_addr}/pulpcore_registry  Sample central: http://{central_addr}"
    );
    println!(
        "Repositories: {PLATFORM} (public), {EDITOR} (host A), {CHAT} (host B), {TOOLS} (containers, A and B)\n"
    );
    println!("# Host A's Flatpak index: the platform and the editor");
    println!(
        "curl -s --cacert {ca} {} '{url}/index/static?{INDEX_QUERY}'\n",
        cert(&host_a)
    );
    println!("# Host B's Flatpak index: the platform and the chat app");
    println!(
        "curl -s --cacert {ca} {} '{url}/index/static?{INDEX_QUERY}'\n",
        cert(&host_b)
    );
    println!("# Anonymous: the public platform only");
    println!("curl -s --cacert {ca} '{url}/index/static?{INDEX_QUERY}'\n");
    println!("# Host A's catalog, and a manifest it may read");
    println!(
        "curl -s --cacert {ca} {} '{url}/v2/_catalog'",
        cert(&host_a)
    );
    let editor = sample
        .manifest(EDITOR, "latest")
        .map(|i| i.manifest_digest.clone())
        .unwrap_or_default();
    println!(
        "curl -s --cacert {ca} {} '{url}/v2/{EDITOR}/manifests/{editor}'\n",
        cert(&host_a)
    );
    println!("# Host B asking for host A's editor: 404 NAME_UNKNOWN, as if it did not exist");
    println!(
        "curl -s --cacert {ca} {} '{url}/v2/{EDITOR}/manifests/latest'",
        cert(&host_b)
    );

    let handle = running.handle.clone();
    tokio::select! {
        r = tokio::signal::ctrl_c() => { r?; }
        r = running.wait() => { r?; }
    }
    handle.stop(true).await;
    drop(dir);
    Ok(0)
}
