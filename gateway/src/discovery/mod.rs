//! What Foreman asks a smart proxy when it is registered or its features are
//! refreshed (`hammer proxy create --url`, `hammer proxy refresh-features`),
//! answered as foreman-proxy answers it for a proxy whose one module is the
//! Ruby plugin, so that the gateway's `management.listen` can be a smart proxy
//! record of its own and Katello's sync reaches it on that one URL.
//!
//! The shapes, from the sources (commits of the snapshots read):
//!
//! * `GET /features`: theforeman/smart-proxy e8fe59f8,
//!   `modules/root/root_api.rb`: the sorted names of the running modules,
//!   `foreman_proxy` left out.
//! * `GET /v2/features`: same commit, `modules/root/root_v2_api.rb`: per
//!   module `http_enabled`, `https_enabled`, `settings`, `state` and
//!   `capabilities` (`process_capabilities`: sorted, `[]` when there are none).
//! * `GET /version`: `root_api.rb`: `{"version": Proxy::VERSION, "modules":
//!   {name: version}}`.
//!
//! What reads them: theforeman/foreman eb66c09e, `app/models/smart_proxy.rb`
//! `get_features` asks `/v2/features` first (`/features` only on a 404) and
//! drops every feature whose `state` is not `"running"`; `associate_features`
//! keeps the keys found in `Feature.name_map` (`"Container_Gateway"`, from
//! Katello's `db/seeds.d/104-proxy.rb`, maps to `container_gateway`);
//! `SmartProxyFeature#import_json` stores `capabilities` and `settings`.
//! `/version` feeds `ProxyStatus::Version`, and `SmartProxiesController`
//! compares its `version` with Foreman's own major.minor for a warning only.
//! Katello/katello 583462de reads no setting and no capability of the
//! `Container_Gateway` feature (`smart_proxy_extensions.rb` only takes the
//! record's `url`, through `self_or_colocated_with_feature`), so both are
//! empty, as Katello/smart_proxy_container_gateway d27e05c6 reports them
//! (`test/integration_test.rb`: `state` running, `capabilities` [],
//! `settings` {}; `container_gateway.rb` exposes no setting).
//!
//! foreman-proxy answers `/v2/features` 403 to a client not in
//! `:trusted_hosts:` or without a certificate (`lib/sinatra/authorization.rb`);
//! the gateway applies that rule, `management.allowed_cns`, to all three.

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;

use crate::http::drain;
use crate::server::shared::Shared;

/// The module name: the Ruby plugin's `plugin 'container_gateway'`.
pub const FEATURE: &str = "container_gateway";

/// One module of `/v2/features`, its fields in foreman-proxy's order.
#[derive(Serialize, Debug, PartialEq, Eq)]
pub struct Feature {
    /// The management routes are served over TLS only.
    pub http_enabled: bool,
    pub https_enabled: bool,
    pub settings: BTreeMap<String, String>,
    /// Always `"running"`: a serving gateway is running, and Foreman drops a
    /// feature in any other state, after which Katello stops pushing, which is
    /// the one thing that makes a gateway that is not ready yet ready.
    pub state: &'static str,
    pub capabilities: Vec<String>,
}

impl Feature {
    pub fn container_gateway() -> Self {
        Feature {
            http_enabled: false,
            https_enabled: true,
            settings: BTreeMap::new(),
            state: "running",
            capabilities: Vec::new(),
        }
    }
}

/// `/version`.
#[derive(Serialize, Debug, PartialEq, Eq)]
pub struct Version {
    pub version: String,
    pub modules: BTreeMap<&'static str, &'static str>,
}

impl Version {
    /// `proxy_version` is `management.proxy_version`; the module's version is
    /// the gateway's, the code that now implements it.
    pub fn new(proxy_version: &str) -> Self {
        Version {
            version: proxy_version.to_owned(),
            modules: BTreeMap::from([(FEATURE, env!("CARGO_PKG_VERSION"))]),
        }
    }
}

/// Register `/features`, `/v2/features` and `/version`. Sinatra matches them
/// exactly (no trailing slash), and so does this.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/features")
            .route(web::get().to(features_v1))
            .default_service(drain::only("GET")),
    )
    .service(
        web::resource("/v2/features")
            .route(web::get().to(features_v2))
            .default_service(drain::only("GET")),
    )
    .service(
        web::resource("/version")
            .route(web::get().to(version))
            .default_service(drain::only("GET")),
    );
}

async fn guarded(
    req: &HttpRequest,
    shared: web::Data<Shared>,
    body: impl FnOnce(&Shared) -> HttpResponse,
) -> HttpResponse {
    let shared = shared.into_inner();
    match crate::management::authorize(req, &shared).await {
        Ok(_) => body(&shared),
        Err(response) => response,
    }
}

async fn features_v1(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    guarded(&req, shared, |_| HttpResponse::Ok().json([FEATURE])).await
}

async fn features_v2(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    guarded(&req, shared, |_| {
        HttpResponse::Ok().json(BTreeMap::from([(FEATURE, Feature::container_gateway())]))
    })
    .await
}

async fn version(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    guarded(&req, shared, |s| {
        HttpResponse::Ok().json(Version::new(&s.config.proxy_version))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    // The exact bytes foreman-proxy's `to_json` gives for the Ruby plugin.
    #[test]
    fn v2_feature_serializes_as_foreman_proxy_does() {
        let body =
            serde_json::to_string(&BTreeMap::from([(FEATURE, Feature::container_gateway())]))
                .unwrap();
        assert_eq!(
            body,
            r#"{"container_gateway":{"http_enabled":false,"https_enabled":true,"settings":{},"state":"running","capabilities":[]}}"#
        );
    }

    #[test]
    fn version_names_the_module() {
        let body = serde_json::to_value(Version::new("3.11.0")).unwrap();
        assert_eq!(body["version"], "3.11.0");
        assert_eq!(body["modules"][FEATURE], env!("CARGO_PKG_VERSION"));
        assert_eq!(body["modules"].as_object().map(|m| m.len()), Some(1));
    }
}
