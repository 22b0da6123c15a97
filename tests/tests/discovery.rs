//! The management listener as Foreman and Katello use it: registered with
//! `hammer proxy create --url https://<proxy>:<management port>`, asked for
//! `/v2/features` and `/version`, then sent Katello's pushes under
//! `/container_gateway/`. Real mTLS, real curl, and Ruby's rest-client doing
//! what Foreman's ProxyAPI and Katello's ProxyAPI::ContainerGateway do.
//!
//! The expected shapes are foreman-proxy's (theforeman/smart-proxy e8fe59f8,
//! `modules/root/root_api.rb` and `root_v2_api.rb`) for the Ruby plugin
//! (Katello/smart_proxy_container_gateway d27e05c6, `test/integration_test.rb`:
//! `state` running, `capabilities` [], `settings` {}).

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use gateway_tests::client::{Curl, CurlHttp};
use gateway_tests::e2e::{self, Cmd};
use gateway_tests::fake_central::FakeCentral;
use gateway_tests::fake_pulp::FakePulp;
use gateway_tests::harness::{Gateway, GatewayBuilder};
use gateway_tests::pki::{Issued, Pki};
use serde_json::json;

const PROXY_VERSION: &str = "3.11.0";

struct Env {
    pki: Arc<Pki>,
    _pulp: FakePulp,
    _central: FakeCentral,
    gateway: Gateway,
    management: SocketAddr,
    dir: tempfile::TempDir,
}

fn free_loopback() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port");
    l.local_addr().expect("its address")
}

fn start() -> Env {
    let pki = Arc::new(Pki::new());
    let pulp = FakePulp::builder().start();
    let central = FakeCentral::builder().start();
    let mut last = String::new();
    // The port is picked before the gateway binds it: retry if another
    // process took it in between.
    for _ in 0..3 {
        let management = free_loopback();
        let started = GatewayBuilder::new(pki.clone())
            .pulp(&pulp)
            .central(&central)
            .set(
                "management.listen",
                toml::Value::Array(vec![management.to_string().into()]),
            )
            .set("management.proxy_version", PROXY_VERSION)
            .try_start();
        match started {
            Ok(gateway) => {
                let dir = tempfile::tempdir().expect("temp dir");
                return Env {
                    pki,
                    _pulp: pulp,
                    _central: central,
                    gateway,
                    management,
                    dir,
                };
            }
            Err(e) if e.contains("cannot listen") => last = e,
            Err(e) => panic!("gateway does not start: {e}"),
        }
    }
    panic!("no free port for management.listen: {last}");
}

impl Env {
    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.management.port())
    }

    /// curl to the management listener, trusting the test CA, no certificate.
    fn curl(&self) -> Curl {
        Curl::new(&self.url()).cacert(&self.gateway.files().ca)
    }

    /// As Foreman and Katello call: the management certificate (CN in allowed_cns).
    fn katello(&self) -> Curl {
        let f = self.gateway.files();
        self.curl().cert(&f.management_cert, &f.management_key)
    }

    fn curl_as(&self, cert: &Issued, stem: &str) -> Curl {
        let (c, k) = cert.write_to(self.dir.path(), stem);
        self.curl().cert(&c, &k)
    }
}

fn v2_features() -> serde_json::Value {
    json!({"container_gateway": {
        "http_enabled": false,
        "https_enabled": true,
        "settings": {},
        "state": "running",
        "capabilities": []
    }})
}

fn version() -> serde_json::Value {
    json!({"version": PROXY_VERSION, "modules": {"container_gateway": env!("CARGO_PKG_VERSION")}})
}

fn assert_denied(r: &gateway_tests::client::CurlResponse, what: &str) {
    assert_eq!(r.status, 403, "{what}: {}", r.text());
    let body = r.json();
    assert_eq!(body["errors"][0]["code"], "DENIED", "{what}: {body}");
    assert!(
        body["errors"][0]["message"].is_string(),
        "{what}: registry-format error expected: {body}"
    );
}

#[test]
fn each_route_answers_foreman_proxys_shape() {
    let env = start();
    let k = env.katello();

    let r = k.get("/v2/features");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json(), v2_features());
    // Field order as foreman-proxy's to_json writes it, for byte-level diffing.
    assert_eq!(
        r.text(),
        r#"{"container_gateway":{"http_enabled":false,"https_enabled":true,"settings":{},"state":"running","capabilities":[]}}"#
    );

    let r = k.get("/features");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json(), json!(["container_gateway"]));

    let r = k.get("/version");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json(), version());
}

#[test]
fn a_certificate_not_in_allowed_cns_is_refused_403() {
    let env = start();
    let intruder = env.pki.management_cert("intruder.example.com");
    let c = env.curl_as(&intruder, "intruder");
    for path in [
        "/features",
        "/v2/features",
        "/version",
        "/container_gateway/users",
    ] {
        assert_denied(&c.get(path), path);
    }
    let r = c
        .body(
            "application/x-www-form-urlencoded",
            "repositories[][repository]=org%2Fx&repositories[][auth_required]=false",
        )
        .put("/container_gateway/repository_list");
    assert_denied(&r, "PUT repository_list");
    assert!(
        env.gateway
            .shared()
            .state
            .snapshot()
            .repositories
            .is_empty()
    );

    // A host's subscription certificate from the same CA is not Katello either,
    // nor is a management-shaped certificate from another CA.
    let host = env.pki.host_cert("0d9c2c52-7a4e-4b1c-9a7c-1f2e3d4c5b6a");
    assert_denied(&env.curl_as(&host, "host").get("/v2/features"), "host cert");
    let foreign = env
        .pki
        .host_cert_from_other_ca("0d9c2c52-7a4e-4b1c-9a7c-1f2e3d4c5b6b");
    assert_denied(
        &env.curl_as(&foreign, "foreign").get("/v2/features"),
        "other CA",
    );
}

#[test]
fn no_client_certificate_is_refused() {
    let env = start();
    let c = env.curl();
    for path in [
        "/features",
        "/v2/features",
        "/version",
        "/container_gateway/users",
    ] {
        assert_denied(&c.get(path), path);
    }
}

#[test]
fn katellos_pushes_reach_the_gateway_on_the_registered_url() {
    let env = start();
    let r = env
        .katello()
        .body(
            "application/x-www-form-urlencoded",
            "repositories[][repository]=org%2Fpublic%2Fapp&repositories[][auth_required]=false\
             &repositories[][repository]=org%2Fprivate%2Fapp&repositories[][auth_required]=true",
        )
        .put("/container_gateway/repository_list");
    assert_eq!(r.status, 200, "{}", r.text());
    let snapshot = env.gateway.shared().state.snapshot();
    assert_eq!(snapshot.repositories.len(), 2);
    let r = env.katello().get("/container_gateway/users");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"users": []}));
}

#[test]
fn the_listeners_keep_their_own_routes() {
    let env = start();
    // Clients' routes are not on the management listener...
    for path in ["/v2/", "/v2/_catalog", "/index/static", "/v1/_ping"] {
        let r = env.katello().get(path);
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert_eq!(r.json()["errors"][0]["code"], "NOT_FOUND", "{path}");
    }
    // ...and discovery is not carved out of the registry namespace of the
    // client listener.
    let r = env.gateway.katello_curl().get("/v2/features");
    assert_ne!(r.json(), v2_features(), "{}", r.text());
    let r = env.gateway.katello_curl().get("/version");
    assert_eq!(r.status, 404, "{}", r.text());
    // foreman-proxy routes only GET there; other methods are 405 in registry
    // format, a body included (over HTTP/2 it is read before the answer, or
    // the stream would be reset under the client).
    for path in ["/features", "/v2/features", "/version"] {
        let r = env.katello().run("DELETE", path);
        assert_eq!(r.status, 405, "{path}: {}", r.text());
        assert_eq!(r.json()["errors"][0]["code"], "UNSUPPORTED", "{path}");
        let r = env
            .katello()
            .http(CurlHttp::Http2)
            .body("application/json", b"{\"features\":[]}".to_vec())
            .run("PUT", path);
        assert_eq!(r.http_version, "2", "{path}");
        assert_eq!(r.status, 405, "{path}: {}", r.text());
        assert_eq!(r.header("allow"), Some("GET"), "{path}");
    }
}

// ---------------------------------------------------------------------------
// Ruby's rest-client, as Foreman and Katello drive it
// ---------------------------------------------------------------------------

/// Foreman's ProxyAPI::Resource (theforeman/foreman eb66c09e,
/// app/services/proxy_api/resource.rb: `ssl_auth_params`, `parse`),
/// SmartProxy#get_features and #associate_features (app/models/smart_proxy.rb),
/// ProxyAPI::Version, and Katello's ProxyAPI::ContainerGateway
/// (Katello/katello 583462de, lib/proxy_api/container_gateway.rb) with the
/// payload `update_container_repo_list` builds.
const FOREMAN_CLIENT_RB: &str = r#"
require 'json'
require 'openssl'
require 'rest-client'

url, ca, cert, key = ARGV
params = {
  :timeout => 60,
  :headers => { :accept => :json, :x_request_id => 'req-1', :x_session_id => 'sess-1' },
  :user => nil, :password => nil,
  :ssl_client_cert => OpenSSL::X509::Certificate.new(File.read(cert)),
  :ssl_client_key => OpenSSL::PKey.read(File.read(key)),
  :ssl_ca_file => ca,
  :verify_ssl => OpenSSL::SSL::VERIFY_PEER,
}
def parse(response)
  if response && response.code >= 200 && response.code < 300
    body = response.body.to_s
    body.empty? ? true : JSON.parse(body)
  else
    false
  end
end
def say(h)
  STDOUT.puts(JSON.generate(h))
  STDOUT.flush
end

# SmartProxy#get_features: v2 first, features not running dropped.
r = RestClient::Resource.new(url + '/v2/features', params).get
say(step: 'GET /v2/features', code: r.code, content_type: r.headers[:content_type], body: r.body)
reply = parse(r)
reply.reject! { |name, f| f['state'] != 'running' }
# Feature.name_map for Katello's seeded "Container_Gateway".
name_map = { 'Container_Gateway'.downcase.gsub(/\s+/, '') => 'Container_Gateway' }
valid = reply.select { |feature, _| name_map.key?(feature) }
# SmartProxyFeature#import_json
imported = valid.map { |n, f| [name_map[n], { 'capabilities' => f['capabilities'], 'settings' => f['settings'] }] }.to_h
say(step: 'associate_features', features: imported)

r = RestClient::Resource.new(url + '/features', params).get
say(step: 'GET /features', code: r.code, body: r.body)

r = RestClient::Resource.new(url + '/version', params).get
versions = parse(r)
say(step: 'GET /version', code: r.code, body: r.body, version: versions['version'])

# Katello's update_container_repo_list: ProxyAPI::ContainerGateway#repository_list.
repo_list = [{ repository: 'org/public/app', auth_required: false },
             { repository: 'org/private/app', auth_required: true }]
r = RestClient::Resource.new(url + '/container_gateway/repository_list', params).put({ repositories: repo_list })
say(step: 'PUT /container_gateway/repository_list', code: r.code, body: r.body, parsed: parse(r))

r = RestClient::Resource.new(url + '/container_gateway/users', params).get
say(step: 'GET /container_gateway/users', code: r.code, body: r.body)
"#;

/// What a client Foreman does not trust gets: ProxyException wrapping Forbidden.
const UNTRUSTED_CLIENT_RB: &str = r#"
require 'json'
require 'openssl'
require 'rest-client'
url, ca, cert, key = ARGV
params = {
  :ssl_client_cert => OpenSSL::X509::Certificate.new(File.read(cert)),
  :ssl_client_key => OpenSSL::PKey.read(File.read(key)),
  :ssl_ca_file => ca, :verify_ssl => OpenSSL::SSL::VERIFY_PEER,
  :headers => { :accept => :json },
}
begin
  RestClient::Resource.new(url + '/v2/features', params).get
  puts JSON.generate(step: 'GET /v2/features', outcome: 'answered')
rescue RestClient::Forbidden => e
  puts JSON.generate(step: 'GET /v2/features', outcome: 'forbidden', code: e.http_code, body: e.response.body)
end
"#;

/// Whether ruby with rest-client can run here; prints SKIPPED or, under
/// CG_REQUIRE_E2E=1, fails.
fn ruby_ready(test: &str) -> bool {
    let why = if e2e::which("ruby").is_none() {
        "ruby is not on PATH".to_owned()
    } else {
        let probe = Cmd::new("ruby")
            .args(["-e", "require 'rest-client'"])
            .timeout(Duration::from_secs(60))
            .run();
        if probe.success() {
            return true;
        }
        format!("ruby cannot load rest-client: {}", probe.output().trim())
    };
    let msg = format!(
        "SKIPPED: {test}: {why} (Debian: apt-get install ruby ruby-rest-client; set {}=1 to fail instead)",
        e2e::REQUIRE_ENV
    );
    if e2e::required() {
        panic!("{}=1 but {msg}", e2e::REQUIRE_ENV);
    }
    e2e::say(&msg);
    false
}

fn run_ruby(env: &Env, script: &str, cert: &Path, key: &Path) -> Vec<serde_json::Value> {
    let path = env.dir.path().join("client.rb");
    std::fs::write(&path, script).expect("write the ruby script");
    let out = Cmd::new("ruby")
        .arg(&path)
        .arg(env.url())
        .arg(&env.gateway.files().ca)
        .arg(cert)
        .arg(key)
        .timeout(Duration::from_secs(120))
        .run()
        .ok();
    out.stdout
        .lines()
        .map(|l| {
            e2e::say(&format!("ruby: {l}"));
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))
        })
        .collect()
}

#[test]
fn ruby_rest_client_registers_and_syncs_like_foreman_and_katello() {
    if !ruby_ready("ruby_rest_client_registers_and_syncs_like_foreman_and_katello") {
        return;
    }
    let env = start();
    let f = env.gateway.files();
    let steps = run_ruby(
        &env,
        FOREMAN_CLIENT_RB,
        &f.management_cert,
        &f.management_key,
    );
    assert_eq!(steps.len(), 6, "{steps:?}");

    assert_eq!(steps[0]["code"], 200);
    assert_eq!(steps[0]["content_type"], "application/json");
    let body: serde_json::Value =
        serde_json::from_str(steps[0]["body"].as_str().unwrap_or_default()).expect("JSON body");
    assert_eq!(body, v2_features());
    assert_eq!(
        steps[1]["features"],
        json!({"Container_Gateway": {"capabilities": [], "settings": {}}})
    );
    assert_eq!(steps[2]["body"], r#"["container_gateway"]"#);
    assert_eq!(steps[3]["version"], PROXY_VERSION);
    let body: serde_json::Value =
        serde_json::from_str(steps[3]["body"].as_str().unwrap_or_default()).expect("JSON body");
    assert_eq!(body, version());

    // ProxyAPI's parse: 2xx with an empty body is `true`.
    assert_eq!(steps[4]["code"], 200);
    assert_eq!(steps[4]["parsed"], true);
    let snapshot = env.gateway.shared().state.snapshot();
    let mut names: Vec<&str> = snapshot.repositories.keys().map(|k| &**k).collect();
    names.sort_unstable();
    assert_eq!(names, ["org/private/app", "org/public/app"]);

    assert_eq!(steps[5]["code"], 200);
    assert_eq!(steps[5]["body"], r#"{"users":[]}"#);
}

#[test]
fn ruby_rest_client_from_an_untrusted_host_gets_forbidden() {
    if !ruby_ready("ruby_rest_client_from_an_untrusted_host_gets_forbidden") {
        return;
    }
    let env = start();
    let (cert, key) = env
        .pki
        .management_cert("intruder.example.com")
        .write_to(env.dir.path(), "intruder");
    let steps = run_ruby(&env, UNTRUSTED_CLIENT_RB, &cert, &key);
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert_eq!(steps[0]["outcome"], "forbidden");
    assert_eq!(steps[0]["code"], 403);
}

// ---------------------------------------------------------------------------
// The new keys are validated, each problem naming its key
// ---------------------------------------------------------------------------

fn problems(toml_text: &str) -> Vec<String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = container_gateway::config::parse(toml_text).expect("parses");
    match container_gateway::config::validate(&dir.path().join("gateway.toml"), &file) {
        Ok(_) => Vec::new(),
        Err(p) => p.0.iter().map(|p| p.to_string()).collect(),
    }
}

#[test]
fn bad_management_keys_are_named() {
    let p = problems("[management]\nlisten = [\"nowhere\"]\n");
    assert!(
        p.iter()
            .any(|m| m.contains("management.listen") && m.contains("nowhere")),
        "{p:?}"
    );
    let p = problems("[management]\nproxy_version = \"three\"\n");
    assert!(
        p.iter().any(|m| m.contains("management.proxy_version")),
        "{p:?}"
    );
    let p = problems(
        "[server]\nlisten = [\"127.0.0.1:9443\"]\n[management]\nlisten = [\"127.0.0.1:9443\"]\n",
    );
    assert!(
        p.iter()
            .any(|m| m.contains("management.listen") && m.contains("client listener")),
        "{p:?}"
    );
    let p = problems("[management]\nlisten = [\"127.0.0.1:9443\"]\nallowed_cns = []\n");
    assert!(
        p.iter().any(|m| m.contains("management.allowed_cns")),
        "{p:?}"
    );
    // Good values raise nothing about these keys.
    for good in ["3.11.0", "3.11.0-develop", "3.9"] {
        let p = problems(&format!(
            "[management]\nlisten = [\"127.0.0.1:9443\"]\nproxy_version = \"{good}\"\n"
        ));
        assert!(
            !p.iter().any(|m| m.contains("management.")),
            "{good}: {p:?}"
        );
    }
}
