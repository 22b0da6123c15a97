//! The processes a run measures or compares against: the gateway (its own
//! process, so its memory is its own), nginx, and the load tools.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

fn wait_listening(addr: SocketAddr, what: &str, child: &mut Child) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{what} exited early ({status})"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("{what} did not listen on {addr} within 20 s"))
}

pub use gateway_tests::harness::rss_kib;

/// Where the gateway finds what it serves and who it asks.
pub struct GatewaySetup<'a> {
    pub pulp: &'a str,
    pub central: &'a str,
    pub client_ca: &'a Path,
    /// `{"name": auth_required}`: the pushed repository list.
    pub repositories: serde_json::Map<String, serde_json::Value>,
}

pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Gateway {
    pub fn start(bin_dir: &Path, setup: &GatewaySetup<'_>) -> Result<Gateway, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).map_err(|e| e.to_string())?;
        let snapshot = serde_json::json!({"version": 1, "repositories": setup.repositories});
        std::fs::write(state.join("state.json"), snapshot.to_string())
            .map_err(|e| e.to_string())?;
        let port = free_port()?;
        let config = format!(
            r#"[server]
listen = []
listen_plain = ["127.0.0.1:{port}"]
client_ca = "{ca}"
trusted_frontends = ["127.0.0.1/32"]
public_url = "https://gateway.bench.example.com"
workers = 2
[pulp]
endpoint = "{pulp}"
registry_path = "/pulpcore_registry"
index_ttl_secs = 3600
[central]
url = "{central}"
[cache]
ttl_secs = 3600
[state]
dir = "{state}"
[plugins]
dir = "{plugins}"
chain = ["rhsm-cert"]
require_root_owner = false
[admin]
listen = ""
[log]
filter = "warn"
"#,
            ca = setup.client_ca.display(),
            pulp = setup.pulp,
            central = setup.central,
            state = state.display(),
            plugins = bin_dir.display(),
        );
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, config).map_err(|e| e.to_string())?;
        let log =
            std::fs::File::create(dir.path().join("gateway.log")).map_err(|e| e.to_string())?;
        let mut child = Command::new(bin_dir.join("container-gateway"))
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start the gateway: {e}"))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if let Err(e) = wait_listening(addr, "gateway", &mut child) {
            let log = std::fs::read_to_string(dir.path().join("gateway.log")).unwrap_or_default();
            let _ = child.kill();
            return Err(format!("{e}\n{log}"));
        }
        Ok(Gateway {
            child,
            addr,
            _dir: dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn rss_kib(&self) -> Option<(u64, u64)> {
        rss_kib(self.pid())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx serving one directory as static files, as the baseline for the index.
pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Static files from `root`.
    pub fn files(root: &Path, workers: usize) -> Result<Nginx, String> {
        Nginx::start(&format!("root {};", root.display()), "", workers)
    }

    /// A plain reverse proxy to `upstream` (keep-alive both ways, no
    /// buffering to disk): what relaying alone costs, without any checks.
    pub fn proxy(upstream: SocketAddr, workers: usize) -> Result<Nginx, String> {
        Nginx::start(
            "location / { proxy_pass http://upstream; proxy_http_version 1.1; \
             proxy_set_header Connection \"\"; proxy_buffering off; }",
            &format!("upstream upstream {{ server {upstream}; keepalive 32; }}"),
            workers,
        )
    }

    fn start(server: &str, http: &str, workers: usize) -> Result<Nginx, String> {
        let bin = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .ok_or("nginx is not installed (bench/run.sh installs it)")?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = free_port()?;
        let p = dir.path().display();
        // Running as root, nginx would drop its workers to `nobody`, who cannot
        // read a private temporary directory.
        let user = if gateway_tests::e2e::is_root() {
            "user root;"
        } else {
            ""
        };
        let conf = format!(
            r#"{user}
worker_processes {workers};
pid {p}/nginx.pid;
error_log {p}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {p}/body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    {http}
    server {{
        listen 127.0.0.1:{port};
        default_type application/json;
        {server}
    }}
}}
"#
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
        let mut child = Command::new(bin)
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(dir.path())
            .arg("-g")
            .arg("daemon off;")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start nginx: {e}"))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_listening(addr, "nginx", &mut child)?;
        Ok(Nginx {
            child,
            addr,
            _dir: dir,
        })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Requests per second wrk reaches against `url` (2 threads, `conns` connections).
pub fn wrk(url: &str, headers: &[(&str, &str)], conns: usize, secs: u64) -> Result<f64, String> {
    let mut cmd = Command::new("wrk");
    cmd.arg("-t2")
        .arg(format!("-c{conns}"))
        .arg(format!("-d{secs}s"))
        .arg("--latency");
    add_headers(&mut cmd, headers);
    let out = cmd
        .arg(url)
        .output()
        .map_err(|e| format!("cannot run wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("Non-2xx or 3xx responses") {
        return Err(format!("wrk saw error answers from {url}:\n{text}"));
    }
    text.lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no rate in wrk's output for {url}:\n{text}"))
}

/// One download with curl: (bytes/s, bytes, HTTP status).
pub fn curl_download(url: &str, headers: &[(&str, &str)]) -> Result<(f64, u64, u16), String> {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{speed_download} %{size_download} %{http_code}",
    ]);
    add_headers(&mut cmd, headers);
    let out = cmd
        .arg(url)
        .output()
        .map_err(|e| format!("cannot run curl: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut f = text.split_whitespace();
    match (f.next(), f.next(), f.next()) {
        (Some(s), Some(n), Some(c)) => Ok((
            s.parse().map_err(|_| format!("curl: {text}"))?,
            n.parse().map_err(|_| format!("curl: {text}"))?,
            c.parse().map_err(|_| format!("curl: {text}"))?,
        )),
        _ => Err(format!("curl printed {text:?}")),
    }
}

/// GET `url` into `file` with curl; the HTTP status.
pub fn curl_to_file(url: &str, headers: &[(&str, &str)], file: &Path) -> Result<u16, String> {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-w", "%{http_code}", "-o"]).arg(file);
    add_headers(&mut cmd, headers);
    let out = cmd
        .arg(url)
        .output()
        .map_err(|e| format!("cannot run curl: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| format!("curl gave no status for {url}"))
}

/// Samples a process's resident memory on a thread until stopped.
pub struct RssSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl RssSampler {
    pub fn start(pid: u32, every: Duration) -> RssSampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut max = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some((rss, _)) = rss_kib(pid) {
                    max = max.max(rss);
                }
                std::thread::sleep(every);
            }
            max
        });
        RssSampler { stop, thread }
    }

    /// The largest resident size seen, in KiB.
    pub fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

/// `-H "name: value"` for each header (curl and wrk spell it alike).
fn add_headers(cmd: &mut Command, headers: &[(&str, &str)]) {
    for (k, v) in headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
}
