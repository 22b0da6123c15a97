//! container-gateway authentication plugin for subscription certificates.
//!
//! A registered host presents its Candlepin certificate (the consumer identity
//! or SCA content-access certificate, `CN=<consumer uuid>` in both), either in
//! the TLS handshake or through a trusted frontend's header. This plugin
//! verifies it against the configured CA bundle (katello-default-ca) and
//! answers `Host(<CN>)`; a certificate that is present but does not verify, or
//! that is another Candlepin certificate (a pool entitlement, whose CN is not a
//! consumer), is denied (401), never passed on to a weaker backend; no
//! certificate at all abstains. `verify.rs` says how the kinds are told apart.
//!
//! Configuration (JSON object at init):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `client_ca` | required | PEM bundle of trusted CAs (the gateway fills it from `server.client_ca`) |
//! | `cache_capacity` | 4096 | verified certificates remembered (each keeps its DER, 3-4 KB); 0 disables the cache |
//! | `cache_ttl_secs` | 300 | how long a verification is reused |
//!
//! On the gateway's SIGHUP the plugin re-reads `client_ca`. A bundle that does
//! not load (missing, unreadable, no CA certificate in it) is reported and the
//! CAs trusted so far stay. A bundle that loads replaces them at once, and the
//! verification cache is emptied: a certificate accepted under a CA that is no
//! longer trusted must not stay accepted from the cache.

mod cache;
mod verify;

use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gateway_plugin_abi::{AuthPlugin, Decision, Identity, Level, Logger, Request};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::Deserialize;
use x509_parser::time::ASN1Time;

pub use verify::{MAX_INTERMEDIATES_IN_PATH, MAX_PRESENTED_INTERMEDIATES};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    client_ca: PathBuf,
    #[serde(default = "default_cache_capacity")]
    cache_capacity: usize,
    #[serde(default = "default_cache_ttl_secs")]
    cache_ttl_secs: u64,
}

fn default_cache_capacity() -> usize {
    4096
}

fn default_cache_ttl_secs() -> u64 {
    300
}

/// The plugin instance: the trusted CAs and the verification cache.
pub struct RhsmCert {
    /// Replaced whole on reload; a request verifies against the one it read.
    trust: RwLock<Arc<Trust>>,
    cache: cache::Cache,
    log: Logger,
}

/// The trusted CAs, and the cache generation whose entries they vouch for.
struct Trust {
    anchors: Vec<verify::Anchor>,
    generation: u64,
}

impl RhsmCert {
    fn settings(config_json: &str) -> Result<Settings, String> {
        serde_json::from_str(config_json).map_err(|e| format!("invalid rhsm-cert settings: {e}"))
    }

    fn trust(&self) -> Arc<Trust> {
        // A panic cannot leave the slot half-written (it is one assignment).
        self.trust
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn log_trusted(log: &Logger, what: &str, settings: &Settings, anchors: &[verify::Anchor]) {
        log.log_fmt(
            Level::Info,
            format_args!(
                "{what} {} CA certificate(s) from {}: {}",
                anchors.len(),
                settings.client_ca.display(),
                anchors
                    .iter()
                    .map(verify::Anchor::subject)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        );
    }

    fn load_anchors(path: &std::path::Path, log: &Logger) -> Result<Vec<verify::Anchor>, String> {
        let shown = path.display();
        let iter =
            CertificateDer::pem_file_iter(path).map_err(|e| format!("client_ca {shown}: {e}"))?;
        let mut anchors = Vec::new();
        for (index, item) in iter.enumerate() {
            let der =
                item.map_err(|e| format!("client_ca {shown}: certificate #{}: {e}", index + 1))?;
            match verify::Anchor::new(der.to_vec()) {
                Ok(anchor) => anchors.push(anchor),
                Err(reason) => log.warn(&format!(
                    "client_ca {shown}: skipping certificate #{}: {reason}",
                    index + 1
                )),
            }
        }
        if anchors.is_empty() {
            return Err(format!("client_ca {shown}: no CA certificate found"));
        }
        Ok(anchors)
    }
}

impl AuthPlugin for RhsmCert {
    const NAME: &'static std::ffi::CStr = c"rhsm-cert";
    // Parsing and at most a few signature checks on the presented chain against
    // anchors loaded at init or reload (which reads the file before taking any
    // lock); the locks are held only to copy an entry or a pointer.
    const NON_BLOCKING: bool = true;

    fn init(config_json: &str, log: Logger) -> Result<Self, String> {
        let settings = Self::settings(config_json)?;
        let anchors = Self::load_anchors(&settings.client_ca, &log)?;
        let cache = cache::Cache::new(
            settings.cache_capacity,
            Duration::from_secs(settings.cache_ttl_secs),
        );
        Self::log_trusted(&log, "trusting", &settings, &anchors);
        Ok(RhsmCert {
            trust: RwLock::new(Arc::new(Trust {
                anchors,
                generation: cache.generation(),
            })),
            cache,
            log,
        })
    }

    const RELOADS: bool = true;

    /// Re-read the bundle. The old CAs stay until the new ones are loaded, so
    /// requests meanwhile verify as before; then the cache is emptied and
    /// moved to a new generation before the new CAs go in. A request that
    /// verified against the old CAs and stores its result after that is
    /// turned away by the cache (wrong generation), so once `reload` returns
    /// nothing the old CAs vouched for is accepted any more.
    fn reload(&self, config_json: &str) -> Result<(), String> {
        let settings = Self::settings(config_json)?;
        let anchors = Self::load_anchors(&settings.client_ca, &self.log)
            .map_err(|e| format!("{e}; the CAs trusted so far stay"))?;
        let (generation, forgotten) = self.cache.reset();
        Self::log_trusted(&self.log, "reloaded: trusting", &settings, &anchors);
        self.log.log_fmt(
            Level::Debug,
            format_args!("forgot {forgotten} cached verification(s)"),
        );
        *self.trust.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(Trust {
            anchors,
            generation,
        });
        Ok(())
    }

    fn authenticate(&self, request: &Request<'_>) -> Decision {
        let (leaf, source) = match (request.tls_leaf(), request.forwarded_cert()) {
            (Some(leaf), _) => (leaf, "TLS"),
            (None, Some(forwarded)) => (forwarded, "forwarded"),
            (None, None) => return Decision::Abstain,
        };
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        if let Some(cn) = self.cache.get(leaf, now_unix) {
            return Decision::Allow(Identity::Host(cn));
        }
        // Only the TLS path carries intermediates; a forwarded request has an
        // empty chain, so this is empty there.
        let presented = request.tls_chain().skip(1);
        let trust = self.trust();
        match verify::verify(leaf, presented, &trust.anchors, ASN1Time::now()) {
            Ok(verified) => {
                self.log.log_fmt(
                    Level::Debug,
                    format_args!(
                        "{source} {} verified for host {}",
                        verified.kind.describe(),
                        verified.cn
                    ),
                );
                let cn = verified.cn.clone();
                self.cache.insert(leaf, verified, trust.generation);
                Decision::Allow(Identity::Host(cn))
            }
            Err(reason) => Decision::Deny(format!("{source} client certificate: {reason}")),
        }
    }
}

gateway_plugin_abi::export_auth_plugin!(RhsmCert);

#[cfg(test)]
mod tests;
