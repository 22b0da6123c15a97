//! `gateway-bench [--smoke] [targets...]`: measures the gateway against its
//! baselines in one run on loopback and prints one table (target, measured,
//! ratio, met). Started by `bench/run.sh`, which builds everything and
//! installs the load tools. Targets are numbered as in the README's table;
//! with none given, all run. `--smoke` shrinks every size so the whole run
//! takes seconds: it proves the bench works, its figures mean nothing.

mod central;
mod certs;
mod load;
mod procs;
mod table;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use container_gateway::index::{UpstreamIndex, synth};
use gateway_tests::fake_pulp::{Blob, FakePulp, FakeRepo, Image};

use crate::central::Central;
use crate::certs::{HostCa, host_uuid};
use crate::load::CERT_HEADER;
use crate::procs::{Gateway, GatewaySetup, Nginx};
use crate::table::Row;

/// How big each measurement is.
struct Sizes {
    index_repos: [usize; 2],
    wrk_secs: u64,
    parse_bytes: usize,
    blob_bytes: u64,
    first_hosts: usize,
    cached_hosts: usize,
    repos_per_host: usize,
    repo_pool: usize,
}

const FULL: Sizes = Sizes {
    index_repos: [2_000, 20_000],
    wrk_secs: 10,
    parse_bytes: 20_000_000,
    blob_bytes: 1 << 30,
    first_hosts: 1_000,
    cached_hosts: 100_000,
    repos_per_host: 50,
    repo_pool: 2_000,
};

const SMOKE: Sizes = Sizes {
    index_repos: [100, 400],
    wrk_secs: 1,
    parse_bytes: 1_000_000,
    blob_bytes: 16 << 20,
    first_hosts: 50,
    cached_hosts: 500,
    repos_per_host: 50,
    repo_pool: 200,
};

const INDEX_QUERY: &str =
    "/index/static?label:org.flatpak.ref:exists=1&architecture=amd64&os=linux&tag=latest";

struct Bench {
    sizes: &'static Sizes,
    bin_dir: PathBuf,
    ca: HostCa,
    ca_path: PathBuf,
    _dir: tempfile::TempDir,
}

fn main() -> ExitCode {
    let mut smoke = false;
    let mut only: Vec<u32> = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--smoke" => smoke = true,
            t => match t.parse() {
                Ok(n) => only.push(n),
                Err(_) => {
                    eprintln!("usage: gateway-bench [--smoke] [target numbers 1-6...]");
                    return ExitCode::from(2);
                }
            },
        }
    }
    let bench = match Bench::new(if smoke { &SMOKE } else { &FULL }) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("gateway-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let wanted = |n: u32| only.is_empty() || only.contains(&n);
    let mut rows = Vec::new();
    let mut run = |n: u32, f: &dyn Fn(&Bench) -> Result<Vec<Row>, String>| {
        if wanted(n) {
            eprintln!("gateway-bench: target {n}...");
            match f(&bench) {
                Ok(r) => rows.extend(r),
                Err(e) => rows.push(Row::failed(n, &e)),
            }
        }
    };
    run(1, &Bench::filtered_index);
    run(2, &Bench::parse_rate);
    run(3, &Bench::manifest_through_guard);
    run(4, &Bench::blob_stream);
    run(5, &Bench::first_requests);
    run(6, &Bench::cached_hosts);
    println!("{}", table::machine());
    println!("{}", table::render(&rows));
    if smoke {
        println!(
            "(smoke run: sizes shrunk to prove the bench runs; the figures are not measurements)"
        );
    }
    if rows.iter().any(Row::is_error) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

impl Bench {
    fn new(sizes: &'static Sizes) -> Result<Bench, String> {
        let bin_dir = std::env::current_exe()
            .map_err(|e| e.to_string())?
            .parent()
            .map(Path::to_path_buf)
            .ok_or("no directory for the bench binary")?;
        for needed in ["container-gateway", "librhsm_cert.so"] {
            if !bin_dir.join(needed).exists() {
                return Err(format!(
                    "{needed} is not in {}: build it first (bench/run.sh does)",
                    bin_dir.display()
                ));
            }
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let ca = HostCa::new()?;
        let ca_path = dir.path().join("ca.pem");
        ca.write_ca(&ca_path)?;
        Ok(Bench {
            sizes,
            bin_dir,
            ca,
            ca_path,
            _dir: dir,
        })
    }

    fn gateway(
        &self,
        pulp: &str,
        central: &Central,
        repositories: impl IntoIterator<Item = (String, bool)>,
    ) -> Result<Gateway, String> {
        Gateway::start(
            &self.bin_dir,
            &GatewaySetup {
                pulp,
                central: &central.url(),
                client_ca: &self.ca_path,
                repositories: repositories
                    .into_iter()
                    .map(|(k, v)| (k, serde_json::Value::Bool(v)))
                    .collect(),
            },
        )
    }

    /// 1: a host's filtered index from the warm cache, against nginx serving
    /// the very same bytes from a file.
    fn filtered_index(&self) -> Result<Vec<Row>, String> {
        let mut rows = Vec::new();
        for repos in self.sizes.index_repos {
            let names: Vec<String> = (0..repos).map(synth::repo_name).collect();
            // A tenth public; the host's 50 come from the rest.
            let private: Vec<String> = names.iter().skip(1).step_by(10).cloned().collect();
            let upstream = synth::index(&synth::Spec::new(repos));
            let pulp = FakePulp::builder()
                .index_json(upstream.clone())
                .keep_alive(true)
                .log_capacity(16)
                .start();
            let central = Central::start(private, self.sizes.repos_per_host, Duration::ZERO)?;
            let gw = self.gateway(
                pulp.url(),
                &central,
                names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (n.clone(), i % 10 != 0)),
            )?;
            let header = self.ca.header_for(&host_uuid(1, repos))?;
            let root = tempfile::tempdir().map_err(|e| e.to_string())?;
            let file = root.path().join("filtered.json");
            let status = procs::curl_to_file(
                &format!("{}{INDEX_QUERY}", gw.url()),
                &[(CERT_HEADER, &header)],
                &file,
            )?;
            let body = std::fs::metadata(&file).map_err(|e| e.to_string())?.len();
            if status != 200 || body == 0 {
                return Err(format!("the gateway answered {status} with {body} bytes"));
            }
            let nginx = Nginx::files(root.path(), 2)?;
            let secs = self.sizes.wrk_secs;
            let baseline = procs::wrk(
                &format!("http://{}/filtered.json", nginx.addr),
                &[],
                16,
                secs,
            )?;
            let measured = procs::wrk(
                &format!("{}{INDEX_QUERY}", gw.url()),
                &[(CERT_HEADER, &header)],
                16,
                secs,
            )?;
            rows.push(Row::ratio(
                1,
                &format!(
                    "filtered /index/static, {repos} repos ({:.1} MB upstream, {:.2} MB to this host), warm, 16 conns",
                    upstream.len() as f64 / 1e6,
                    body as f64 / 1e6
                ),
                ">= 0.5x nginx",
                &format!("{measured:.0} req/s vs nginx {baseline:.0} req/s"),
                measured / baseline,
                0.5,
            ));
        }
        Ok(rows)
    }

    /// 2: parsing and indexing an upstream index, one core.
    fn parse_rate(&self) -> Result<Vec<Row>, String> {
        let per_repo = synth::index(&synth::Spec::new(200)).len() / 200;
        let repos = (self.sizes.parse_bytes / per_repo.max(1)).max(1);
        let body = bytes::Bytes::from(synth::index(&synth::Spec::new(repos)));
        let mut runs = 0u32;
        let started = Instant::now();
        while runs < 3 || started.elapsed() < Duration::from_secs(2) {
            let parsed = UpstreamIndex::parse(body.clone()).map_err(|e| e.to_string())?;
            if parsed.len() != repos {
                return Err(format!("parsed {} of {repos} repositories", parsed.len()));
            }
            runs += 1;
            if self.sizes.wrk_secs < 2 && runs >= 3 {
                break;
            }
        }
        let rate = body.len() as f64 * f64::from(runs) / started.elapsed().as_secs_f64() / 1e6;
        Ok(vec![Row::ratio(
            2,
            &format!(
                "parse + index a {:.1} MB upstream index ({repos} repos), one core",
                body.len() as f64 / 1e6
            ),
            ">= 300 MB/s",
            &format!("{rate:.0} MB/s ({runs} runs)"),
            rate / 300.0,
            1.0,
        )])
    }

    /// 3: a manifest by digest through the guard, as pulp_container >= 2.28
    /// answers it (200, the manifest streamed from the API), then as older
    /// ones did (a 302 to the content app, relayed).
    fn manifest_through_guard(&self) -> Result<Vec<Row>, String> {
        let mut rows = Vec::new();
        for (redirect, what) in [
            (false, "guard + 200 manifest streamed (Pulp >= 2.28)"),
            (true, "guard + 302 relay (older Pulp)"),
        ] {
            let name = "acme/library/cv/app";
            let pulp = FakePulp::builder()
                .repo(
                    FakeRepo::new(name)
                        .image("latest", Image::new())
                        .redirect_manifests(redirect),
                )
                .keep_alive(true)
                .log_capacity(16)
                .start();
            let digest = pulp
                .repo(name)
                .and_then(|r| r.tag_digest("latest"))
                .ok_or("the fake Pulp has no digest for the tag")?;
            let central = Central::start(vec![name.to_owned()], 1, Duration::ZERO)?;
            let gw = self.gateway(pulp.url(), &central, [(name.to_owned(), true)])?;
            let header = self.ca.header_for(&host_uuid(3, 0))?;
            let path = format!("/v2/{name}/manifests/{digest}");
            let direct = procs::wrk(
                &format!("{}{path}", pulp.registry_url()),
                &[],
                16,
                self.sizes.wrk_secs,
            )?;
            let measured = procs::wrk(
                &format!("{}{path}", gw.url()),
                &[(CERT_HEADER, &header)],
                16,
                self.sizes.wrk_secs,
            )?;
            let nginx = Nginx::proxy(pulp.addr(), 2)?;
            let proxied = procs::wrk(
                &format!("http://{}{}{path}", nginx.addr, pulp.registry_path()),
                &[],
                16,
                self.sizes.wrk_secs,
            )?;
            rows.push(Row::ratio(
                3,
                &format!("GET /v2/<name>/manifests/<digest>, {what}, 16 conns"),
                ">= 0.8x fake Pulp direct",
                &format!(
                    "{measured:.0} req/s vs direct {direct:.0} req/s (nginx as a bare proxy: {proxied:.0} req/s, {:.2}x; gateway/nginx {:.2}x)",
                    proxied / direct,
                    measured / proxied
                ),
                measured / direct,
                0.8,
            ));
        }
        Ok(rows)
    }

    /// 4: one big blob streamed from Pulp's 200 path, with the gateway's memory
    /// sampled all along.
    fn blob_stream(&self) -> Result<Vec<Row>, String> {
        let name = "acme/library/cv/big";
        let size = self.sizes.blob_bytes;
        let blob = Blob::generated_unhashed(size, 7);
        let digest = blob.digest.clone();
        let pulp = FakePulp::builder()
            .repo(FakeRepo::new(name).blob(blob).direct_blobs(true))
            .keep_alive(true)
            .log_capacity(16)
            .start();
        let central = Central::start(vec![name.to_owned()], 1, Duration::ZERO)?;
        let gw = self.gateway(pulp.url(), &central, [(name.to_owned(), true)])?;
        let header = self.ca.header_for(&host_uuid(4, 0))?;
        let path = format!("/v2/{name}/blobs/{digest}");
        let (mut direct, mut through, mut peak_rss) = (0f64, 0f64, 0u64);
        let rounds = if self.sizes.wrk_secs < 2 { 1 } else { 2 };
        for _ in 0..rounds {
            let (speed, bytes, status) =
                procs::curl_download(&format!("{}{path}", pulp.registry_url()), &[])?;
            if status != 200 || bytes != size {
                return Err(format!("direct download: {status}, {bytes} bytes"));
            }
            direct = direct.max(speed);
            let sampler = procs::RssSampler::start(gw.pid(), Duration::from_millis(20));
            let outcome =
                procs::curl_download(&format!("{}{path}", gw.url()), &[(CERT_HEADER, &header)]);
            peak_rss = peak_rss.max(sampler.stop());
            let (speed, bytes, status) = outcome?;
            if status != 200 || bytes != size {
                return Err(format!(
                    "download through the gateway: {status}, {bytes} bytes"
                ));
            }
            through = through.max(speed);
        }
        let nginx = Nginx::proxy(pulp.addr(), 2)?;
        let (proxied, bytes, status) = procs::curl_download(
            &format!("http://{}{}{path}", nginx.addr, pulp.registry_path()),
            &[],
        )?;
        if status != 200 || bytes != size {
            return Err(format!("download through nginx: {status}, {bytes} bytes"));
        }
        let mib = |b: f64| b / f64::from(1u32 << 20);
        Ok(vec![
            Row::ratio(
                4,
                &format!("{} MiB blob, Pulp 200 path, streamed", size >> 20),
                ">= 0.8x direct",
                &format!(
                    "{:.0} MiB/s vs direct {:.0} MiB/s (nginx as a bare proxy: {:.0} MiB/s, {:.2}x)",
                    mib(through),
                    mib(direct),
                    mib(proxied),
                    proxied / direct
                ),
                through / direct,
                0.8,
            ),
            Row::limit(
                4,
                "gateway RSS while streaming (sampled every 20 ms)",
                "< 64 MiB",
                peak_rss as f64 / 1024.0,
                64.0,
                "MiB",
            ),
        ])
    }

    /// 5: a crowd of hosts the gateway has never seen, all at once; then one
    /// new host a thousand times at once.
    fn first_requests(&self) -> Result<Vec<Row>, String> {
        let n = self.sizes.first_hosts;
        let pool: Vec<String> = (0..self.sizes.repo_pool)
            .map(|i| format!("acme/library/cv/repo-{i:05}"))
            .collect();
        let central = Central::start(
            pool.clone(),
            self.sizes.repos_per_host,
            Duration::from_millis(10),
        )?;
        let gw = self.gateway(
            "http://127.0.0.1:9",
            &central,
            pool.into_iter().map(|p| (p, true)),
        )?;
        let uuids: Vec<String> = (0..n).map(|i| host_uuid(5, i)).collect();
        let headers = self.ca.headers_for(&uuids)?;
        let mut rows = Vec::new();
        let same = vec![self.ca.header_for(&host_uuid(55, 0))?; n];
        for (label, headers, expected) in [
            (
                format!("{n} concurrent first requests, {n} distinct new hosts"),
                headers,
                n as u64,
            ),
            (
                format!("{n} concurrent first requests, one new host"),
                same,
                1,
            ),
        ] {
            let before = central.calls();
            let answers = load::all_at_once(gw.addr, "/v2/_catalog", &headers)?;
            let calls = central.calls() - before;
            let failed = answers.iter().filter(|(_, s)| *s != 200).count();
            let mut latencies: Vec<Duration> = answers.iter().map(|(d, _)| *d).collect();
            let p50 = load::quantile(&mut latencies, 0.5);
            let p99 = load::quantile(&mut latencies, 0.99);
            rows.push(Row::exact(
                5,
                &format!("{label} (central answers in 10 ms)"),
                &format!("exactly {expected} central call(s)"),
                &format!(
                    "{calls} calls, {failed} non-200; p50 {:.1} ms, p99 {:.1} ms",
                    p50.as_secs_f64() * 1e3,
                    p99.as_secs_f64() * 1e3
                ),
                calls == expected && failed == 0,
            ));
        }
        Ok(rows)
    }

    /// 6: the memory a large population of cached hosts costs.
    fn cached_hosts(&self) -> Result<Vec<Row>, String> {
        let n = self.sizes.cached_hosts;
        let per = self.sizes.repos_per_host;
        let pool: Vec<String> = (0..self.sizes.repo_pool)
            .map(|i| format!("default_organization-library-cv{}-repo-{i:05}", i % 40))
            .collect();
        let central = Central::start(pool.clone(), per, Duration::ZERO)?;
        let gw = self.gateway(
            "http://127.0.0.1:9",
            &central,
            pool.into_iter().map(|p| (p, true)),
        )?;
        let (idle, _) = gw.rss_kib().ok_or("cannot read the gateway's memory")?;
        let uuids: Vec<String> = (0..n).map(|i| host_uuid(6, i)).collect();
        let headers = self.ca.headers_for(&uuids)?;
        let started = Instant::now();
        let by_status = load::each_once(&gw.url(), "/v2/_catalog?n=1", headers, 64)?;
        let elapsed = started.elapsed();
        std::thread::sleep(Duration::from_millis(500));
        let (rss, peak) = gw.rss_kib().ok_or("cannot read the gateway's memory")?;
        let ok = by_status.get(&200).copied().unwrap_or(0);
        let calls = central.calls();
        if ok != n as u64 || calls != n as u64 {
            return Err(format!(
                "{ok} of {n} answered 200 ({by_status:?}); central asked {calls} times"
            ));
        }
        Ok(vec![Row::limit_with(
            6,
            &format!(
                "{n} cached hosts x {per} repos (of {}), after filling",
                self.sizes.repo_pool
            ),
            "RSS < 150 MiB",
            rss as f64 / 1024.0,
            150.0,
            &format!(
                "{:.0} MiB (idle {:.0}, peak {:.0}); filled at {:.0} hosts/s",
                rss as f64 / 1024.0,
                idle as f64 / 1024.0,
                peak as f64 / 1024.0,
                n as f64 / elapsed.as_secs_f64()
            ),
        )])
    }
}
