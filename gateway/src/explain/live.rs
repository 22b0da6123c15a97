//! The admin listener's `/explain/...`: the same answer as the command, from the
//! running gateway's own caches (what it would serve that client right now).

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};

use super::{Explanation, entitled, runtime_report};
use crate::entitlements::{Grant, Source};
use crate::server::index_cache::FetchError;
use crate::server::shared::Shared;
use crate::upstream::central::CentralClient;
use crate::upstream::pulp::PulpClient;

fn source_name(grant: &Grant) -> &'static str {
    match grant.source {
        Source::Central => "central",
        Source::StaleCentral => "central (stale: central is failing)",
        Source::Pushed => "pushed by Katello",
    }
}

async fn explain(
    req: &HttpRequest,
    shared: &Arc<Shared>,
    pulp: &PulpClient,
    identity: String,
    grant: Result<Option<Grant>, String>,
) -> HttpResponse {
    let snapshot = shared.state.snapshot();
    let (source, age, granted) = match grant {
        Ok(Some(g)) => (
            source_name(&g).to_owned(),
            Some(g.age.as_secs()),
            Some(g.repositories),
        ),
        Ok(None) => ("none (public repositories only)".to_owned(), None, None),
        Err(e) => (
            format!("none: {e}; the gateway answers this client 503"),
            None,
            None,
        ),
    };
    let architecture = form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "arch")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| "amd64".to_owned());
    let query = super::command::flatpak_query(&architecture);
    let cfg = &shared.config;
    let upstream = shared
        .index
        .upstream(
            &format!("static?{query}"),
            cfg.pulp.index_ttl,
            cfg.cache.stale_if_error,
            || async {
                let r = pulp
                    .index("static", &query)
                    .await
                    .map_err(FetchError::Upstream)?;
                Ok((r.status.as_u16(), r.body))
            },
        )
        .await;
    let (index, index_error) = match upstream {
        Ok(u) => (
            Some(runtime_report(&u.index, &|n| {
                snapshot.visible(n, granted.as_ref())
            })),
            None,
        ),
        Err(e) => (None, Some(format!("{e:?}"))),
    };
    HttpResponse::Ok().json(Explanation {
        identity,
        source,
        age_secs: age,
        repositories: entitled(&snapshot, granted.as_ref()),
        index,
        index_error,
    })
}

pub async fn host(
    req: HttpRequest,
    uuid: web::Path<String>,
    shared: web::Data<Shared>,
    pulp: web::Data<PulpClient>,
    central: web::Data<CentralClient>,
) -> HttpResponse {
    let uuid: Arc<str> = Arc::from(uuid.into_inner());
    let snapshot = shared.state.snapshot();
    let grant = shared
        .entitlements
        .for_host(&snapshot, &uuid, || central.catalog_for_host(&uuid))
        .await
        .map(Some)
        .map_err(|e| e.to_string());
    explain(&req, &shared, &pulp, format!("host:{uuid}"), grant).await
}

pub async fn user(
    req: HttpRequest,
    login: web::Path<String>,
    shared: web::Data<Shared>,
    pulp: web::Data<PulpClient>,
) -> HttpResponse {
    let login = login.into_inner();
    let grant = shared
        .state
        .snapshot()
        .user_mapping(&login)
        .map(Grant::pushed);
    explain(&req, &shared, &pulp, format!("user:{login}"), Ok(grant)).await
}

pub async fn anonymous(
    req: HttpRequest,
    shared: web::Data<Shared>,
    pulp: web::Data<PulpClient>,
) -> HttpResponse {
    explain(&req, &shared, &pulp, "anonymous".to_owned(), Ok(None)).await
}
