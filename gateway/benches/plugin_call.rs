//! One `authenticate` call on the rhsm-cert backend: through the C ABI (the
//! loaded `.so`, as the gateway runs it) against a direct Rust call of the same
//! code (the rlib). Both on the cache-hit path a repeat client takes, plus the
//! no-certificate path, which isolates the cost of crossing the boundary. The
//! SHA-256 reference shows why the cache is not keyed by a digest of the DER.
//!
//! `cargo bench -p container-gateway --bench plugin_call` builds
//! `librhsm_cert.so` next to the bench binary (rhsm-cert is a dev-dependency);
//! set `GW_PLUGIN_DIR` to bench an installed copy instead.

use std::hint::black_box;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use container_gateway::auth::plugin_host::load_chain;
use container_gateway::auth::{AuthDecision, AuthFacts, Identity};
use container_gateway::config::PluginsConfig;
use criterion::{Criterion, criterion_group, criterion_main};
use gateway_plugin_abi::{AuthPlugin, CgStr, Decision, Logger, Request};
use rcgen::{BasicConstraints, CertificateParams, CustomExtension, DnType, IsCa, Issuer, KeyPair};

const UUID: &str = "0d9c2c52-2a4f-4a21-9c6f-5b0e3e1c7a11";

/// A CA (PEM) and a leaf (DER) about the size of a Candlepin SCA certificate.
/// ECDSA keys, because ring cannot generate RSA ones; the cache-hit path never
/// touches the signature, and the opaque payload makes up the size difference.
fn certificates() -> (String, Vec<u8>) {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "katello.example.com");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate().expect("leaf key");
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, UUID);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Default_Organization");
    let payload: Vec<u8> = (0..2000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut ext = vec![0x04, 0x82, (payload.len() >> 8) as u8, payload.len() as u8];
    ext.extend_from_slice(&payload);
    // A content access certificate as Candlepin issues it: version "3.4",
    // the payload, type "OrgLevel" (UTF8Strings around the OCTET STRING).
    let utf8 = |s: &str| [&[0x0c, s.len() as u8][..], s.as_bytes()].concat();
    params.custom_extensions = vec![
        CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 2312, 9, 6], utf8("3.4")),
        CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 2312, 9, 7], ext),
        CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 2312, 9, 8], utf8("OrgLevel")),
    ];
    let leaf = params.signed_by(&leaf_key, &issuer).expect("leaf cert");
    (ca_cert.pem(), leaf.der().to_vec())
}

fn plugin_library() -> PathBuf {
    let file = "librhsm_cert.so";
    if let Some(dir) = std::env::var_os("GW_PLUGIN_DIR") {
        return PathBuf::from(dir).join(file);
    }
    let exe = std::env::current_exe().expect("bench binary path");
    let deps = exe.parent().expect("bench binary directory");
    [deps.join(file), deps.join("..").join(file)]
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{file} not found next to {}; set GW_PLUGIN_DIR",
                exe.display()
            )
        })
}

fn bench(c: &mut Criterion) {
    let (ca_pem, leaf) = certificates();
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &ca_pem).expect("write CA");
    // A private 0755 copy: the host refuses group-writable files, and the
    // build directory's mode depends on the umask.
    let plugin_dir = dir.path().join("plugins");
    std::fs::create_dir(&plugin_dir).expect("plugin dir");
    std::fs::set_permissions(&plugin_dir, std::fs::Permissions::from_mode(0o755))
        .expect("chmod dir");
    let so = plugin_dir.join("librhsm_cert.so");
    std::fs::copy(plugin_library(), &so).expect("copy plugin");
    std::fs::set_permissions(&so, std::fs::Permissions::from_mode(0o755)).expect("chmod plugin");

    let cfg = PluginsConfig {
        dir: plugin_dir,
        chain: vec!["rhsm-cert".into()],
        require_root_owner: true,
        call_timeout: Duration::from_secs(2),
        settings: Default::default(),
    };
    let through_abi = load_chain(&cfg, &ca_path)
        .unwrap_or_else(|p| panic!("{p}"))
        .remove(0);
    let config = serde_json::json!({ "client_ca": ca_path }).to_string();
    let direct = rhsm_cert::RhsmCert::init(&config, Logger::disabled()).expect("direct init");

    let chain = vec![leaf.clone()];
    let peer = Some("192.0.2.7:50312".parse().expect("address"));
    let facts = AuthFacts {
        tls_chain: &chain,
        method: "GET",
        path: "/v2/_catalog",
        peer,
        ..Default::default()
    };
    let expected = AuthDecision::Allow(Identity::Host(UUID.into()));
    assert_eq!(
        through_abi.authenticate(&facts).expect("no backend error"),
        expected
    );
    let raw_chain = [CgStr::from_bytes(&leaf)];
    let request = Request::new(
        &raw_chain,
        None,
        None,
        "GET",
        "/v2/_catalog",
        Some("192.0.2.7:50312"),
    );
    assert!(matches!(direct.authenticate(&request), Decision::Allow(_)));
    println!("leaf certificate: {} bytes of DER", leaf.len());

    let mut group = c.benchmark_group("rhsm-cert cache hit");
    group.bench_function("through the C ABI (.so)", |b| {
        b.iter(|| black_box(through_abi.authenticate(black_box(&facts))))
    });
    group.bench_function("direct Rust call (rlib)", |b| {
        b.iter(|| black_box(direct.authenticate(black_box(&request))))
    });
    group.bench_function("reference: SHA-256 of the leaf DER", |b| {
        b.iter(|| black_box(<sha2::Sha256 as sha2::Digest>::digest(black_box(&leaf))))
    });
    group.finish();

    let none = AuthFacts {
        method: "GET",
        path: "/v2/_catalog",
        peer,
        ..Default::default()
    };
    let no_cert = Request::new(
        &[],
        None,
        None,
        "GET",
        "/v2/_catalog",
        Some("192.0.2.7:50312"),
    );
    let mut group = c.benchmark_group("rhsm-cert no certificate (abstain)");
    group.bench_function("through the C ABI (.so)", |b| {
        b.iter(|| black_box(through_abi.authenticate(black_box(&none))))
    });
    group.bench_function("direct Rust call (rlib)", |b| {
        b.iter(|| black_box(direct.authenticate(black_box(&no_cert))))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
