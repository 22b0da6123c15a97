//! `container-gateway explain`: the same answer as the admin listener's
//! `/explain/...`, computed from the configuration, the persisted state,
//! central and Pulp, without a running gateway.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use super::{Explanation, entitled, runtime_report};
use crate::config;
use crate::entitlements::Lookup;
use crate::index::UpstreamIndex;
use crate::run::{EXIT_CONFIG, EXIT_RUNTIME};
use crate::server;
use crate::state::{RepoSet, StateStore};
use crate::upstream::central::CentralClient;
use crate::upstream::pulp::PulpClient;

/// Whom to explain.
#[derive(Clone, Debug)]
pub enum Who {
    Host(String),
    User(String),
    Anonymous,
}

/// The index query flatpak sends, for one architecture.
pub fn flatpak_query(architecture: &str) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("architecture", architecture)
        .append_pair("label:org.flatpak.ref:exists", "1")
        .append_pair("os", "linux")
        .append_pair("tag", "latest")
        .finish()
}

/// Compute the explanation; `Err` carries the exit code and the message.
pub fn explain(
    config_path: &Path,
    who: Who,
    architecture: &str,
) -> Result<Explanation, (i32, String)> {
    let cfg = match config::load(config_path) {
        Ok(c) => c,
        Err(problems) => {
            return Err((
                EXIT_CONFIG,
                format!("{}: {problems}", config_path.display()),
            ));
        }
    };
    let prepared = match server::prepare(&cfg, Some(Vec::new())) {
        Ok(p) => p,
        Err(problems) => {
            return Err((
                EXIT_CONFIG,
                format!("{}: {problems}", config_path.display()),
            ));
        }
    };
    let snapshot = match StateStore::read_snapshot(&cfg.state_dir) {
        Ok(s) => s,
        Err(e) => {
            return Err((
                EXIT_RUNTIME,
                format!("cannot read the gateway's state: {e}"),
            ));
        }
    };
    let query = flatpak_query(architecture);
    let system = actix_web::rt::System::new();
    let explanation = system.block_on(async move {
        let central = CentralClient::new(&cfg.central, prepared.central_tls.clone());
        let pulp = PulpClient::new(&cfg.pulp, prepared.pulp_tls.clone(), Default::default());
        let (identity, source, age, granted): (String, String, Option<u64>, Option<RepoSet>) =
            match &who {
                Who::Anonymous => (
                    "anonymous".into(),
                    "none (public repositories only)".into(),
                    None,
                    None,
                ),
                Who::User(login) => match snapshot.user_mapping(login) {
                    Some(m) => (
                        format!("user:{login}"),
                        "pushed or refreshed at /v2/token".into(),
                        age_of(m.updated_at),
                        Some(m.repositories.clone()),
                    ),
                    None => (
                        format!("user:{login}"),
                        "none (no mapping: public repositories only)".into(),
                        None,
                        None,
                    ),
                },
                Who::Host(uuid) => {
                    let pushed = snapshot.host_mapping(uuid);
                    match pushed.filter(|m| {
                        age_of(m.updated_at).unwrap_or(u64::MAX) < cfg.cache.ttl.as_secs()
                    }) {
                        Some(m) => (
                            format!("host:{uuid}"),
                            "pushed by Katello".into(),
                            age_of(m.updated_at),
                            Some(m.repositories.clone()),
                        ),
                        None => match central.catalog_for_host(uuid).await {
                            Lookup::Granted(r) => (
                                format!("host:{uuid}"),
                                "central (asked just now)".into(),
                                Some(0),
                                Some(r),
                            ),
                            Lookup::Rejected => (
                                format!("host:{uuid}"),
                                "central refused the gateway".into(),
                                None,
                                None,
                            ),
                            Lookup::Failed(why) => match pushed {
                                Some(m) => (
                                    format!("host:{uuid}"),
                                    format!("pushed by Katello (central failed: {why})"),
                                    age_of(m.updated_at),
                                    Some(m.repositories.clone()),
                                ),
                                None => (
                                    format!("host:{uuid}"),
                                    format!(
                                        "none: central failed ({why}); the gateway would answer 503"
                                    ),
                                    None,
                                    None,
                                ),
                            },
                        },
                    }
                }
            };
        let snapshot = Arc::new(snapshot);
        let (index, index_error) = match pulp.index("static", &query).await {
            Ok(r) if r.status.is_success() => match UpstreamIndex::parse(r.body) {
                Ok(index) => (
                    Some(runtime_report(&index, &|n| {
                        snapshot.visible(n, granted.as_ref())
                    })),
                    None,
                ),
                Err(e) => (None, Some(format!("Pulp's index is malformed: {e}"))),
            },
            Ok(r) => (None, Some(format!("Pulp answered {}", r.status))),
            Err(e) => (None, Some(format!("Pulp unavailable: {e}"))),
        };
        Explanation {
            identity,
            source,
            age_secs: age,
            repositories: entitled(&snapshot, granted.as_ref()),
            index,
            index_error,
        }
    });
    Ok(explanation)
}

pub fn run(config_path: &Path, who: Who, json: bool, architecture: &str) -> i32 {
    let explanation = match explain(config_path, who, architecture) {
        Ok(e) => e,
        Err((code, message)) => {
            eprintln!("{message}");
            return code;
        }
    };
    if json {
        match serde_json::to_string_pretty(&explanation) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("cannot render JSON: {e}");
                return EXIT_RUNTIME;
            }
        }
    } else {
        print!("{}", explanation.render());
    }
    0
}

fn age_of(t: SystemTime) -> Option<u64> {
    SystemTime::now()
        .duration_since(t)
        .ok()
        .map(|d| d.as_secs())
}
