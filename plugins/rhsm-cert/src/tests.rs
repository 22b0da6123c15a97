//! Reloading the trusted CAs, called as the gateway calls the plugin: through
//! `AuthPlugin`, with real certificates.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use gateway_plugin_abi::{AuthPlugin, CgStr, Decision, Identity, Logger, Request};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

use crate::RhsmCert;

struct Ca(CertifiedIssuer<'static, KeyPair>);

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Ca(CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap())
    }

    /// A host certificate, `CN=<uuid>`, DER.
    fn host(&self, uuid: &str) -> Vec<u8> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, uuid);
        let key = KeyPair::generate().unwrap();
        params.signed_by(&key, &self.0).unwrap().der().to_vec()
    }

    fn pem(&self) -> String {
        self.0.pem()
    }
}

/// Replace the bundle the way a certificate tool does: aside, then renamed.
fn write_bundle(path: &Path, text: &str) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

fn config(path: &Path) -> String {
    serde_json::json!({ "client_ca": path }).to_string()
}

fn decide(plugin: &RhsmCert, leaf: &[u8]) -> Decision {
    let chain = [CgStr::from_bytes(leaf)];
    plugin.authenticate(&Request::new(&chain, None, None, "GET", "/v2/", None))
}

fn host(uuid: &str) -> Decision {
    Decision::Allow(Identity::Host(uuid.to_owned()))
}

#[test]
fn reload_trusts_the_new_ca_and_forgets_what_the_old_one_vouched_for() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("katello-default-ca.pem");
    let (old_ca, new_ca) = (Ca::new("old Katello CA"), Ca::new("new Katello CA"));
    let (old_host, new_host) = (old_ca.host("host-old"), new_ca.host("host-new"));
    write_bundle(&bundle, &old_ca.pem());
    let plugin = RhsmCert::init(&config(&bundle), Logger::disabled()).unwrap();

    assert_eq!(decide(&plugin, &old_host), host("host-old"));
    // Now in the cache.
    assert_eq!(decide(&plugin, &old_host), host("host-old"));
    assert!(matches!(decide(&plugin, &new_host), Decision::Deny(_)));
    assert_eq!(plugin.cache.len(), 1);

    write_bundle(&bundle, &new_ca.pem());
    plugin.reload(&config(&bundle)).unwrap();
    assert_eq!(plugin.cache.len(), 0, "the reload empties the cache");
    assert_eq!(decide(&plugin, &new_host), host("host-new"));
    match decide(&plugin, &old_host) {
        Decision::Deny(reason) => assert!(reason.contains("not a trusted CA"), "{reason}"),
        other => panic!("a certificate of the removed CA is refused, got {other:?}"),
    }

    // Both CAs in one bundle, as during a rotation.
    write_bundle(&bundle, &format!("{}{}", old_ca.pem(), new_ca.pem()));
    plugin.reload(&config(&bundle)).unwrap();
    assert_eq!(decide(&plugin, &old_host), host("host-old"));
    assert_eq!(decide(&plugin, &new_host), host("host-new"));
}

#[test]
fn a_bundle_that_does_not_load_keeps_the_cas_trusted_so_far() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("ca.pem");
    let ca = Ca::new("Katello CA");
    let leaf = ca.host("host-1");
    write_bundle(&bundle, &ca.pem());
    let plugin = RhsmCert::init(&config(&bundle), Logger::disabled()).unwrap();
    assert_eq!(decide(&plugin, &leaf), host("host-1"));

    let not_a_ca = {
        let key = KeyPair::generate().unwrap();
        CertificateParams::new(vec!["leaf.example".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap()
            .pem()
    };
    for (content, expected) in [
        (None, "No such file"),
        (
            Some("not a certificate\n".to_owned()),
            "no CA certificate found",
        ),
        (Some(String::new()), "no CA certificate found"),
        (Some(not_a_ca), "no CA certificate found"),
        (
            Some("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n".to_owned()),
            "certificate #1",
        ),
    ] {
        match &content {
            None => std::fs::remove_file(&bundle).unwrap(),
            Some(text) => write_bundle(&bundle, text),
        }
        let error = plugin.reload(&config(&bundle)).unwrap_err();
        assert!(
            error.contains(expected) && error.contains("the CAs trusted so far stay"),
            "{content:?}: {error}"
        );
        assert!(error.contains(&bundle.display().to_string()), "{error}");
        // Still trusted, from the cache and by verification alike.
        assert_eq!(decide(&plugin, &leaf), host("host-1"));
        plugin.cache.reset();
        assert_eq!(decide(&plugin, &leaf), host("host-1"));
    }

    let error = plugin.reload("{\"client_ca\": 1}").unwrap_err();
    assert!(error.starts_with("invalid rhsm-cert settings"), "{error}");
    assert_eq!(decide(&plugin, &leaf), host("host-1"));
}

/// Requests keep coming while the CA is swapped: none that starts after
/// `reload` returned accepts the removed CA's certificate, cached or not.
#[test]
fn no_request_after_the_reload_accepts_the_removed_ca() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("ca.pem");
    let (old_ca, new_ca) = (Ca::new("old CA"), Ca::new("new CA"));
    let old_hosts: Vec<Vec<u8>> = (0..4).map(|i| old_ca.host(&format!("old-{i}"))).collect();
    let new_host = new_ca.host("new-0");
    write_bundle(&bundle, &old_ca.pem());
    let plugin = RhsmCert::init(&config(&bundle), Logger::disabled()).unwrap();
    let reloaded = AtomicBool::new(false);

    std::thread::scope(|s| {
        let workers: Vec<_> = old_hosts
            .iter()
            .map(|leaf| {
                let (plugin, reloaded) = (&plugin, &reloaded);
                s.spawn(move || {
                    let mut late_allows = 0;
                    for _ in 0..300 {
                        let after = reloaded.load(Ordering::SeqCst);
                        let allowed = matches!(decide(plugin, leaf), Decision::Allow(_));
                        if after && allowed {
                            late_allows += 1;
                        }
                    }
                    late_allows
                })
            })
            .collect();
        // Let the workers fill the cache, then swap the CA under them.
        while plugin.cache.len() < old_hosts.len() && !workers.iter().all(|w| w.is_finished()) {
            std::thread::yield_now();
        }
        assert_eq!(
            plugin.cache.len(),
            old_hosts.len(),
            "the workers were accepted"
        );
        write_bundle(&bundle, &new_ca.pem());
        plugin.reload(&config(&bundle)).unwrap();
        reloaded.store(true, Ordering::SeqCst);
        for worker in workers {
            assert_eq!(worker.join().unwrap(), 0);
        }
    });
    assert!(
        old_hosts
            .iter()
            .all(|leaf| matches!(decide(&plugin, leaf), Decision::Deny(_)))
    );
    assert_eq!(decide(&plugin, &new_host), host("new-0"));
}
