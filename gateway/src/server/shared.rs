//! What every worker shares, and what each worker builds for itself.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::auth::AuthChain;
use crate::config::Config;
use crate::entitlements::Entitlements;
use crate::server::index_cache::IndexCache;
use crate::state::StateStore;
use crate::upstream::central::CentralClient;
use crate::upstream::pulp::PulpClient;

/// State shared by all workers (`Send + Sync`).
pub struct Shared {
    pub config: Arc<Config>,
    pub state: Arc<StateStore>,
    pub chain: AuthChain,
    pub entitlements: Entitlements,
    pub index: IndexCache,
    pub pulp_tls: Option<Arc<rustls::ClientConfig>>,
    pub central_tls: Option<Arc<rustls::ClientConfig>>,
    /// Set once Pulp has answered (any non-5xx status) since start: part of readiness.
    pub pulp_answered: Arc<AtomicBool>,
}

/// Per-worker upstream clients (awc clients are `!Send`).
pub struct Upstreams {
    pub pulp: PulpClient,
    pub central: CentralClient,
}

impl Upstreams {
    pub fn new(shared: &Shared) -> Self {
        Self {
            pulp: PulpClient::new(
                &shared.config.pulp,
                shared.pulp_tls.clone(),
                shared.pulp_answered.clone(),
            ),
            central: CentralClient::new(&shared.config.central, shared.central_tls.clone()),
        }
    }
}
